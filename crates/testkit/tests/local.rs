//! Every behaviour suite against the embedded `local` platform, each stage opened on a fresh
//! temporary directory.

use std::sync::Arc;

use galley_core::PlatformKind;
use galley_core::stages::Described;
use galley_local::artifacts::LocalArtifacts;
use galley_local::experiments::LocalExperiments;
use galley_local::features::LocalFeatures;
use galley_local::monitor::LocalMonitor;
use galley_local::registry::LocalRegistry;
use galley_testkit::{check_capabilities, run_artifacts, run_experiments, run_features, run_monitor, run_registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalArtifacts::open(dir.path().join("artifacts")).unwrap());
    let mut report = check_capabilities(&store.capabilities(), PlatformKind::Local);
    report.merge(run_artifacts(store).await);
    report.assert_ok();
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
