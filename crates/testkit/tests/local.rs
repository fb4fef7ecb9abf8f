//! Every behaviour suite against the embedded `local` platform, each stage opened on a fresh
//! temporary directory.
//!
//! The local model server is a separate process. This test binary doubles as it: the serving
//! suite's server command re-runs this binary with only the ignored `endpoint_server_process`
//! test selected and the config path in an environment variable (see `galley_testkit::serving::this_binary_as_server`).

use std::path::Path;
use std::sync::Arc;

use galley_core::stages::ArtifactStore;

use galley_core::StageSet;
use galley_local::artifacts::LocalArtifacts;
use galley_local::experiments::LocalExperiments;
use galley_local::features::LocalFeatures;
use galley_local::monitor::LocalMonitor;
use galley_local::orchestrator::LocalOrchestrator;
use galley_local::registry::LocalRegistry;
use galley_local::serving::LocalServing;
use galley_local::serving::EndpointSettings;
use galley_testkit::serving::{RequireToken, this_binary_as_server};
use galley_testkit::{Fixtures, StandardModel, run_artifacts, run_stage_set};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_artifacts_can_be_tested_again_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalArtifacts::open(dir.path().join("artifacts")).unwrap());
    run_artifacts(store.clone()).await.assert_ok();
    // Run again on the same store, as against a long-lived emulator: unique names keep the
    // runs apart, and each case removes what it wrote.
    run_artifacts(store.clone()).await.assert_ok();
    let left = store.list("galley-testkit/").await.unwrap();
    assert!(left.is_empty(), "the suite left objects behind: {left:?}");
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



/// The variable the bearer-auth case's endpoints read their token from; set once, first thing.
const TOKEN_ENV: &str = "GALLEY_TESTKIT_LOCAL_TOKEN";

/// The whole platform through `run_stage_set`, then the proof: every feature local declares was
/// needed by a case that ran and passed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_proves_every_declared_capability() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    // SAFETY: set before this test starts any thread or process that reads the environment;
    // no other test in this binary reads this variable.
    unsafe { std::env::set_var(TOKEN_ENV, &token) };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serving = Arc::new(LocalServing::new(d.join("endpoints"), d.join("monitors"), this_binary_as_server(CONFIG_ENV, "endpoint_server_process")));
    let stages = StageSet {
        artifacts: Arc::new(LocalArtifacts::open(d.join("artifacts")).unwrap()),
        features: Arc::new(LocalFeatures::open(d.join("features.db")).unwrap()),
        experiments: Arc::new(LocalExperiments::open(d.join("experiments.db")).unwrap()),
        orchestrator: Arc::new(LocalOrchestrator::open(d.join("pipelines")).unwrap()),
        registry: Arc::new(LocalRegistry::open(d.join("registry.db")).unwrap()),
        serving: serving.clone(),
        monitor: Arc::new(LocalMonitor::open(d.join("monitors")).unwrap()),
    };
    let mut fixture = StandardModel::new().files_fixture(d);
    let configure = serving.clone();
    fixture.require_token = Some(RequireToken(Arc::new(move |name: &str| {
        let settings = EndpointSettings { token_env: Some(TOKEN_ENV.into()), ..EndpointSettings::default() };
        configure.configure(name, &settings)?;
        Ok(token.clone())
    })));
    let declared = galley_local::capabilities();
    let report = run_stage_set(&stages, &declared, Fixtures { serving: Some(fixture), ..Fixtures::default() }).await;
    report.assert_ok();
    report.assert_capabilities_proven(&declared);
    assert!(report.passed.iter().any(|n| n == "serving::bearer_auth_refuses_requests_without_the_token"), "{}", report.summary());
    assert!(report.passed.iter().any(|n| n == "training::without_managed_compute_a_job_is_refused"), "{}", report.summary());
}
