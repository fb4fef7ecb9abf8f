//! One behaviour suite per stage trait that every platform must pass.
//!
//! Each suite is a list of named async cases over the stage's trait object; the doc comments
//! on the traits in `galley_core::stages` are the contract they check. A platform's tests call
//! `run_<stage>(Arc::new(store)).await.assert_ok()`. Cases that need an optional capability
//! (`galley_core::capability::Feature`) are skipped, by name and with the reason, where the
//! platform's `capabilities()` lacks it. Every case uses fresh unique names and removes what
//! it created, so the suites can run again and again against long-lived emulators.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn aws_artifacts() {
//!     let store = Arc::new(S3Artifacts::open(bucket).await.unwrap());
//!     let mut report = galley_testkit::check_capabilities(&store.capabilities(), PlatformKind::Aws);
//!     report.merge(galley_testkit::run_artifacts(store).await);
//!     report.assert_ok(); // prints passed/skipped(with reasons)/failed, panics on any failure
//! }
//! ```
//!
//! Run the suites inside a Tokio runtime; a multi-threaded one lets the concurrency cases
//! (readers during an overwrite, parallel registrations) really overlap. Serving needs a model
//! the platform can serve: pass a [`ServingFixture`] (see `tests/local.rs` for the local one).
//!
//! Each case is also a public `async fn(Arc<dyn Trait>) -> TestResult`, so a platform can call
//! one directly while chasing a failure.

pub mod artifacts;
pub mod capabilities;
pub mod experiments;
pub mod features;
pub mod monitor;
pub mod orchestrator;
pub mod registry;
pub mod runner;
pub mod serving;
pub mod support;
pub mod training;

pub use artifacts::run_artifacts;
pub use capabilities::check_capabilities;
pub use experiments::run_experiments;
pub use features::run_features;
pub use monitor::run_monitor;
pub use orchestrator::run_orchestrator;
pub use registry::run_registry;
pub use runner::{Case, Report, TestResult};
pub use serving::{ServingCtx, ServingFixture, run_serving};
pub use training::{TrainingFixture, run_training};

use galley_core::StageSet;
use galley_core::stages::Described;

/// Every suite over one platform's opened stages, with each stage's capability declaration
/// checked first. Without a `serving` fixture the serving suite is reported as skipped.
pub async fn run_stage_set(stages: &StageSet, serving: Option<ServingFixture>) -> Report {
    let mut report = Report::default();
    let declared: [(&str, &dyn Described); 7] = [
        ("artifacts", &*stages.artifacts),
        ("features", &*stages.features),
        ("experiments", &*stages.experiments),
        ("orchestrator", &*stages.orchestrator),
        ("registry", &*stages.registry),
        ("serving", &*stages.serving),
        ("monitor", &*stages.monitor),
    ];
    for (stage, object) in declared {
        let mut r = check_capabilities(&object.capabilities(), object.platform());
        for name in r.passed.iter_mut().chain(r.failed.iter_mut().map(|(n, _)| n)) {
            *name = format!("{stage}::{name}");
        }
        report.merge(r);
    }
    report.merge(run_artifacts(stages.artifacts.clone()).await);
    report.merge(run_features(stages.features.clone()).await);
    report.merge(run_experiments(stages.experiments.clone()).await);
    report.merge(run_orchestrator(stages.orchestrator.clone()).await);
    report.merge(run_training(stages.orchestrator.clone(), None).await);
    report.merge(run_registry(stages.registry.clone()).await);
    match serving {
        Some(fixture) => report.merge(run_serving(stages.serving.clone(), fixture).await),
        None => report.skipped.push((
            "serving::*".to_owned(),
            "no ServingFixture was given: the serving suite needs a model the platform can serve".to_owned(),
        )),
    }
    report.merge(run_monitor(stages.monitor.clone()).await);
    report
}
