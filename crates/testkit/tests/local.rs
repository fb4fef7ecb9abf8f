//! Every behaviour suite against the embedded `local` platform, each stage opened on a fresh
//! temporary directory.
//!
//! The local model server is a separate process. This test binary doubles as it: the serving
//! suite's server command re-runs this binary with only the ignored `endpoint_server_process`
//! test selected and the config path in an environment variable (see `server_command`).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use galley_core::PlatformKind;
use galley_core::stages::{ArtifactStore, Described, EndpointSpec, Signature, Variant};
use galley_core::table::Column;
use galley_core::{DType, StageSet, Table, Value};
use galley_local::artifacts::LocalArtifacts;
use galley_local::experiments::LocalExperiments;
use galley_local::features::LocalFeatures;
use galley_local::monitor::LocalMonitor;
use galley_local::orchestrator::LocalOrchestrator;
use galley_local::registry::LocalRegistry;
use galley_local::serving::LocalServing;
use galley_testkit::{
    check_capabilities, run_artifacts, run_experiments, run_features, run_monitor, run_orchestrator, run_registry,
    run_serving, run_stage_set, run_training,
};
use galley_testkit::serving::ServingFixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalArtifacts::open(dir.path().join("artifacts")).unwrap());
    let mut report = check_capabilities(&store.capabilities(), PlatformKind::Local);
    report.merge(run_artifacts(store.clone()).await);
    report.assert_ok();
    // Run again on the same store, as against a long-lived emulator: unique names keep the
    // runs apart, and each case removes what it wrote.
    run_artifacts(store.clone()).await.assert_ok();
    let left = store.list("galley-testkit/").await.unwrap();
    assert!(left.is_empty(), "the suite left objects behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_features() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalFeatures::open(dir.path().join("features.db")).unwrap());
    run_features(store).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(LocalExperiments::open(dir.path().join("experiments.db")).unwrap());
    run_experiments(tracker).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(LocalRegistry::open(dir.path().join("registry.db")).unwrap());
    run_registry(registry).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = Arc::new(LocalMonitor::open(dir.path().join("monitors")).unwrap());
    run_monitor(monitor).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_orchestrator() {
    let dir = tempfile::tempdir().unwrap();
    let orch = Arc::new(LocalOrchestrator::open(dir.path().join("pipelines")).unwrap());
    run_orchestrator(orch.clone()).await.assert_ok();
    // No managed compute on local: the training suite checks the refusal.
    let report = run_training(orch, None).await;
    report.assert_ok();
    assert_eq!(report.passed, ["training::without_managed_compute_a_job_is_refused"]);
}

const CONFIG_ENV: &str = "GALLEY_TESTKIT_ENDPOINT_CONFIG";

/// Not a test: the model server process the serving suite starts (see the module docs).
#[test]
#[ignore = "run only as the local model server child process"]
fn endpoint_server_process() {
    let Some(config) = std::env::var_os(CONFIG_ENV) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Err(e) = runtime.block_on(galley_local::serving::run_server(Path::new(&config))) {
        eprintln!("endpoint server failed: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// `LocalServing` appends `--config FILE`, which the test harness would refuse as an unknown
/// flag; a shell moves it into the environment. The config path also stays on the command
/// line (as a filter matching no test) because `LocalServing` recognises its server by it.
fn server_command() -> Vec<OsString> {
    let script = format!(r#"{CONFIG_ENV}="$2" exec "$0" --ignored --exact --nocapture endpoint_server_process "$2""#);
    vec!["/bin/sh".into(), "-c".into(), script.into(), std::env::current_exe().unwrap().into_os_string()]
}

/// A linear model trained by galley-ml on synthetic data, saved where the server reads it,
/// with predictions for sample rows computed by galley-ml directly, not by the server.
fn serving_fixture(dir: &Path) -> ServingFixture {
    let inputs = vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)];
    let signature = Signature { inputs: inputs.clone(), output: Some(Column::new("quality", DType::Float)) };
    let mut rng = fastrand::Rng::with_seed(9);
    let x: Vec<Vec<f64>> = (0..200).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
    let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0 + 0.05 * (rng.f64() - 0.5)).collect();
    let frame = galley_ml::Frame { features: vec!["alcohol".into(), "ph".into()], x, y };
    let training: galley_blueprint::TrainingStage =
        serde_json::from_value(serde_json::json!({ "algorithm": "linear_regression" })).unwrap();
    let model = galley_ml::train(&training, galley_ml::Task::Regression, &frame, &signature).unwrap();
    let path = dir.join("model.json");
    std::fs::write(&path, model.to_bytes()).unwrap();

    let mut rows = Table::new(inputs);
    for (a, p) in [(9.5, 3.1), (12.25, 3.4), (13.0, 2.9), (10.0, 3.55)] {
        rows.push(vec![Value::Float(a), Value::Float(p)]).unwrap();
    }
    let expected = model.predict(&rows).unwrap();
    let variant = Variant {
        name: "v1".into(),
        model: "wine".into(),
        version: 1,
        artifact_uri: format!("file://{}", path.display()),
        weight: 100,
    };
    ServingFixture {
        spec: EndpointSpec { name: "gtk-wine".into(), variants: vec![variant], signature },
        rows,
        expected,
        tolerance: 1e-9,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_serving() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = serving_fixture(dir.path());
    let serving = Arc::new(LocalServing::new(dir.path().join("endpoints"), dir.path().join("monitors"), server_command()));
    run_serving(serving, fixture).await.assert_ok();
}

/// The whole platform through `run_stage_set`, as a provider's own test would call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stage_set_without_serving_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stages = StageSet {
        artifacts: Arc::new(LocalArtifacts::open(d.join("artifacts")).unwrap()),
        features: Arc::new(LocalFeatures::open(d.join("features.db")).unwrap()),
        experiments: Arc::new(LocalExperiments::open(d.join("experiments.db")).unwrap()),
        orchestrator: Arc::new(LocalOrchestrator::open(d.join("pipelines")).unwrap()),
        registry: Arc::new(LocalRegistry::open(d.join("registry.db")).unwrap()),
        serving: Arc::new(LocalServing::new(d.join("endpoints"), d.join("monitors"), server_command())),
        monitor: Arc::new(LocalMonitor::open(d.join("monitors")).unwrap()),
    };
    let report = run_stage_set(&stages, None).await;
    report.assert_ok();
    assert!(report.passed.contains(&"serving::capabilities::local::matches_the_declaration".to_owned()), "{}", report.summary());
    assert!(report.skipped.iter().any(|(n, why)| n == "serving::*" && why.contains("ServingFixture")), "{}", report.summary());
    assert!(report.passed.len() > 80, "{}", report.summary());
}
