//! One behaviour suite per stage trait that every platform must pass, and the proof that a
//! platform's declared capabilities are real.
//!
//! Each suite is a list of named async cases over the stage's trait object; the doc comments
//! on the traits in `galley_core::stages` are the contract they check. Cases that need an
//! optional capability (`galley_core::capability::Feature`) are skipped, by name and with the
//! reason, where the platform lacks it; a case that passes records the features it needed as
//! proven. A platform's test runs everything and then asks for the proof:
//!
//! ```ignore
//! let report = galley_testkit::run_stage_set(&stages, &my_platform::capabilities(), fixtures).await;
//! report.assert_ok(); // prints passed/skipped(with reasons)/failed, panics on any failure
//! report.assert_capabilities_proven(&my_platform::capabilities()); // no claim without a case
//! ```
//!
//! Every case uses fresh unique names and removes what it created, so the suites can run again
//! and again against long-lived emulators. Run them inside a multi-threaded Tokio runtime so the
//! concurrency cases really overlap. Serving needs a model the platform can serve: pass a
//! [`ServingFixture`] (see `tests/local.rs`). Each case is also a public
//! `async fn(Arc<dyn Trait>) -> TestResult`, so a platform can call one directly.

pub mod artifacts;
pub mod capabilities;
pub mod experiments;
pub mod features;
pub mod monitor;
pub mod onnx_models;
pub mod orchestrator;
pub mod registry;
pub mod runner;
pub mod serving;
pub mod support;
pub mod training;
pub mod triggers;

pub use artifacts::run_artifacts;
pub use capabilities::check_capabilities;
pub use experiments::run_experiments;
pub use features::run_features;
pub use monitor::run_monitor;
pub use orchestrator::run_orchestrator;
pub use registry::run_registry;
pub use runner::{Case, KnownGap, Report, TestResult, run_suite};
pub use serving::{OnnxFixture, ServingCtx, ServingFixture, StandardModel, run_serving};
pub use training::{TrainingFixture, run_training};
pub use triggers::{PlatformEvents, run_triggers};

use std::sync::Arc;

use galley_core::stages::Described;
use galley_core::{Capabilities, StageSet};

/// What only the platform can give the suites.
#[derive(Debug, Clone, Default)]
pub struct Fixtures {
    /// A model deployed where the platform's server reads it; without it the serving suite is
    /// reported as skipped.
    pub serving: Option<ServingFixture>,
    /// A job for managed training (`TrainingFixture::standard` with the platform's image).
    pub training: Option<TrainingFixture>,
    /// Where triggers fire on the platform: what makes them fire on the test substrate.
    pub platform_events: Option<Arc<dyn PlatformEvents>>,
    /// Cases the test substrate cannot run, reported as skipped with the reason.
    pub known_gaps: Vec<KnownGap>,
}

/// Every suite over one platform's opened stages, each stage's declaration checked against the
/// platform's (`platform`, its rules' capabilities) first; cases are skipped by the platform's
/// declaration.
pub async fn run_stage_set(stages: &StageSet, platform: &Capabilities, fixtures: Fixtures) -> Report {
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
        report.merge(check_capabilities(stage, &object.capabilities(), platform));
    }
    let gaps = &fixtures.known_gaps;
    let (caps, orch) = (platform, &stages.orchestrator);
    report.merge(run_suite("artifacts", stages.artifacts.clone(), caps, artifacts::cases(), gaps).await);
    report.merge(run_suite("features", stages.features.clone(), caps, features::cases(), gaps).await);
    report.merge(run_suite("experiments", stages.experiments.clone(), caps, experiments::cases(), gaps).await);
    report.merge(run_suite("orchestrator", orch.clone(), caps, orchestrator::cases(), gaps).await);
    let triggers = triggers::TriggersCtx { orchestrator: orch.clone(), events: fixtures.platform_events.clone() };
    report.merge(run_suite("triggers", triggers, caps, triggers::cases(), gaps).await);
    let training = training::TrainingCtx { orchestrator: orch.clone(), fixture: fixtures.training.map(Arc::new) };
    report.merge(run_suite("training", training, caps, training::cases(), gaps).await);
    report.merge(run_suite("registry", stages.registry.clone(), caps, registry::cases(), gaps).await);
    match fixtures.serving {
        Some(fixture) => {
            let ctx = ServingCtx { serving: stages.serving.clone(), fixture: Arc::new(fixture) };
            report.merge(run_suite("serving", ctx, caps, serving::cases(), gaps).await)
        }
        None => report.skipped.push((
            "serving::*".to_owned(),
            "no ServingFixture was given: the serving suite needs a model the platform can serve".to_owned(),
        )),
    }
    report.merge(run_suite("monitor", stages.monitor.clone(), caps, monitor::cases(), gaps).await);
    report
}
