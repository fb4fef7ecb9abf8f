//! One behaviour suite per stage trait that every platform must pass.
//!
//! Each suite is a list of named async cases over the stage's trait object; the doc comments
//! on the traits in `galley_core::stages` are the contract they check. A platform's tests call
//! `run_<stage>(Arc::new(store)).await.assert_ok()`. Cases that need an optional capability
//! (`galley_core::capability::Feature`) are skipped, by name and with the reason, where the
//! platform's `capabilities()` lacks it. Every case uses fresh unique names and removes what
//! it created, so the suites can run again and again against long-lived emulators.
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

pub use artifacts::run_artifacts;
pub use capabilities::check_capabilities;
pub use experiments::run_experiments;
pub use features::run_features;
pub use monitor::run_monitor;
pub use orchestrator::run_orchestrator;
pub use registry::run_registry;
pub use runner::{Case, Report, TestResult};
pub use serving::{ServingCtx, ServingFixture, run_serving};
