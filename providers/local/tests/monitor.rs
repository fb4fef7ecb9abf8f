//! Drift monitoring: baselines, recorded inferences (from `record` and from the live model
//! server), PSI/KS verdicts and published gauges.

mod common;

use std::time::Duration;

use common::*;
use galley_core::stages::{DriftConfig, DriftMethod, Monitor, Serving};
use galley_core::table::{Column, DType, Table, Value};
use galley_local::monitor::LocalMonitor;

/// A deterministic standard-normal stream (xorshift + Box–Muller), so the test needs no RNG
/// crate and never flakes.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const FEATURES: [&str; 5] = ["f1", "f2", "f3", "f4", "f5"];

/// `rows` rows of five N(0, 1) features, the ones in `shifted` moved by +3σ.
fn table(rng: &mut Normal, rows: usize, shifted: &[&str]) -> (Table, Vec<f64>) {
    let mut t = Table::new(
        FEATURES
            .iter()
            .map(|f| Column::new(*f, DType::Float))
            .collect(),
    );
    let mut predictions = Vec::new();
    for _ in 0..rows {
        let row: Vec<f64> = FEATURES
            .iter()
            .map(|f| rng.next() + if shifted.contains(f) { 3.0 } else { 0.0 })
            .collect();
        // The "model" is f1 + f3: its predictions drift only if f1 or f3 does.
        predictions.push(row[0] + row[2]);
        t.push(row.into_iter().map(Value::Float).collect()).unwrap();
    }
    (t, predictions)
}

fn config(method: DriftMethod, threshold: f64, min_samples: usize) -> DriftConfig {
    DriftConfig {
        method,
        threshold,
        min_samples,
    }
}

#[tokio::test]
async fn drift_is_reported_on_exactly_the_shifted_features() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let monitor = LocalMonitor::open(tmp.path().join("monitors")).unwrap();
    let mut rng = Normal(0x9E37_79B9_7F4A_7C15);
    let (baseline, base_pred) = table(&mut rng, 2000, &[]);
    monitor
        .set_baseline("wine", &baseline, &base_pred)
        .await
        .unwrap();

    // Before any inference: no verdict, nothing drifted.
    let report = monitor
        .drift("wine", &config(DriftMethod::Psi, 0.2, 100))
        .await
        .unwrap();
    assert_eq!(report.samples, 0);
    assert!(!report.drifted);

    for _ in 0..10 {
        let (batch, pred) = table(&mut rng, 100, &["f2", "f4"]);
        monitor.record("wine", &batch, &pred).await.unwrap();
    }
    for (method, threshold) in [(DriftMethod::Psi, 0.2), (DriftMethod::Ks, 0.2)] {
        let report = monitor
            .drift("wine", &config(method, threshold, 100))
            .await
            .unwrap();
        assert_eq!(report.samples, 1000);
        assert_eq!(
            report.drifted_features(),
            vec!["f2", "f4"],
            "{method:?}: {report:#?}"
        );
        assert!(report.drifted);
        let prediction = report.prediction.as_ref().unwrap();
        assert!(
            !prediction.drifted,
            "predictions use f1 and f3 only: {prediction:?}"
        );
        let f2 = &report.features[1];
        assert!(f2.psi.unwrap() > 1.0 && f2.ks.unwrap() > 0.5, "{f2:?}");
        let f1 = &report.features[0];
        assert!(f1.psi.unwrap() < 0.1 && f1.ks.unwrap() < 0.1, "{f1:?}");
    }
    let enough = monitor.drift("wine", &config(DriftMethod::Psi, 0.2, 100)).await.unwrap();

    // Too few samples for the configured minimum: no scores, no verdict, and it says so.
    let report = monitor
        .drift("wine", &config(DriftMethod::Psi, 0.2, 5000))
        .await
        .unwrap();
    assert!(!report.drifted && report.drifted_features().is_empty());
    assert!(report.features.iter().all(|f| f.psi.is_none() && f.ks.is_none()), "{report:?}");
    assert_eq!(report.verdict(), "not enough data (1000 of 5000 inferences)");

    // Gauges accumulate across publishes into Prometheus text: one family per statistic, the
    // feature and the monitor as labels, every family with `# HELP`.
    monitor.publish("wine", &enough.gauges()).await.unwrap();
    let prom = std::fs::read_to_string(tmp.path().join("monitors/wine/metrics.prom")).unwrap();
    assert!(prom.contains("# HELP galley_drift_psi Population stability index"), "{prom}");
    assert!(prom.contains("# TYPE galley_drift_psi gauge"), "{prom}");
    assert!(prom.contains("galley_drift_psi{monitor=\"wine\",feature=\"f2\"} "), "{prom}");
    assert!(prom.contains("galley_drift_detected{monitor=\"wine\"} 1"), "{prom}");
    common::promtool_check_metrics(&prom);
    monitor.publish("wine", &report.gauges()).await.unwrap();
    let prom = std::fs::read_to_string(tmp.path().join("monitors/wine/metrics.prom")).unwrap();
    assert!(prom.contains("galley_drift_min_samples{monitor=\"wine\"} 5000"), "the later publish updates: {prom}");
    assert!(prom.contains("galley_drift_detected{monitor=\"wine\"} 0"), "no verdict below min_samples: {prom}");

    monitor.delete("wine").await.unwrap();
    assert!(
        monitor
            .drift("wine", &config(DriftMethod::Psi, 0.2, 1))
            .await
            .is_err()
    );
    monitor.delete("wine").await.unwrap();
}

#[tokio::test]
async fn bad_monitor_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let monitor = LocalMonitor::open(tmp.path()).unwrap();
    let (t, p) = table(&mut Normal(7), 10, &[]);
    let e = monitor.set_baseline("m", &t, &p[..5]).await.unwrap_err();
    assert!(e.to_string().contains("10 rows but 5 predictions"), "{e}");
    let e = monitor.record("../escape", &t, &p).await.unwrap_err();
    assert!(e.to_string().contains("not valid"), "{e}");
    let e = monitor
        .drift("nothing", &config(DriftMethod::Ks, 0.1, 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no baseline"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_records_inferences_and_exposes_drift_gauges() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let model = write_model(tmp.path(), "v1", 0.0, [1.0, 1.0, 0.0]);
    let serving = serving(tmp.path());
    serving
        .deploy(&spec("recorded", vec![variant("v1", &model, 100)]))
        .await
        .unwrap();
    let url = serving.endpoint_url("recorded").unwrap();
    let monitor = LocalMonitor::open(tmp.path().join("monitors")).unwrap();

    let mut rng = Normal(42);
    let mut baseline = Table::new(signature().inputs);
    let mut base_pred = Vec::new();
    for i in 0..500 {
        let (x1, x2) = (rng.next(), rng.next());
        baseline
            .push(vec![Value::Float(x1), Value::Float(x2), Value::Int(i % 5)])
            .unwrap();
        base_pred.push(x1 + x2);
    }
    monitor
        .set_baseline("recorded", &baseline, &base_pred)
        .await
        .unwrap();

    // 50 requests of 4 rows with x2 shifted by +3σ.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for request in 0..50 {
        // `n` cycles through 0..5 exactly as in the baseline, so it must not drift.
        let data: Vec<serde_json::Value> = (0..4)
            .map(|i| serde_json::json!([rng.next(), rng.next() + 3.0, (request * 4 + i) % 5]))
            .collect();
        let body =
            serde_json::json!({"dataframe_split": {"columns": ["x1", "x2", "n"], "data": data}});
        let r = client
            .post(format!("{url}/invocations"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // The recorder writes in the background: wait (bounded) until all 200 rows are on disk.
    let drift = config(DriftMethod::Psi, 0.2, 100);
    let mut report = monitor.drift("recorded", &drift).await.unwrap();
    for _ in 0..500 {
        if report.samples == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        report = monitor.drift("recorded", &drift).await.unwrap();
    }
    assert_eq!(report.samples, 200);
    assert_eq!(report.drifted_features(), vec!["x2"], "{report:#?}");
    assert!(
        report.prediction.as_ref().unwrap().drifted,
        "x1 + x2 moved with x2"
    );

    monitor.publish("recorded", &report.gauges()).await.unwrap();
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("galley_drift_psi{monitor=\"recorded\",feature=\"x2\"}"),
        "{metrics}"
    );
    // The whole exposition — the server's own families and the monitor's — as Prometheus's own
    // linter reads it.
    common::promtool_check_metrics(&metrics);
    assert!(
        metrics.contains("galley_inference_records_dropped_total{endpoint=\"recorded\"} 0"),
        "{metrics}"
    );
    serving.undeploy("recorded").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_records_are_written_before_the_server_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let model = write_model(tmp.path(), "v1", 0.0, [1.0, 1.0, 0.0]);
    let serving = serving(tmp.path());
    serving
        .deploy(&spec("flushed", vec![variant("v1", &model, 100)]))
        .await
        .unwrap();
    let url = serving.endpoint_url("flushed").unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..30 {
        let body = serde_json::json!({"instances": [[i, 1, 2], [i, 3, 4]]});
        let r = client
            .post(format!("{url}/invocations"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // Straight to SIGTERM: no waiting for the background writer.
    serving.undeploy("flushed").await.unwrap();
    let monitor = LocalMonitor::open(tmp.path().join("monitors")).unwrap();
    let (baseline, predictions) = table(&mut Normal(1), 10, &[]);
    monitor
        .set_baseline("flushed", &baseline, &predictions)
        .await
        .unwrap();
    let report = monitor
        .drift("flushed", &config(DriftMethod::Psi, 0.2, 1))
        .await
        .unwrap();
    assert_eq!(report.samples, 60);
}
