//! MLflow's REST API (tracking and model registry, API 2.0) as Galley's stage traits, written
//! once for every server that speaks it: the onprem platform's MLflow, and Azure ML's
//! MLflow-compatible tracking when that platform lands.
//!
//! - [`client`]: one HTTP client, MLflow's own credentials variables, one error mapping.
//! - [`experiments`]: [`ExperimentTracker`](galley_core::stages::ExperimentTracker) over
//!   experiments, runs, batched params/metrics/tags and search.
//! - [`registry`]: [`ModelRegistry`](galley_core::stages::ModelRegistry) over registered models,
//!   versions, tags and aliases; each version's source is an MLflow model directory (an `MLmodel`
//!   file beside the model file) uploaded through the server's artifact proxy.
//!
//! The object that uses them declares its platform's capabilities: the stage objects take them.

pub mod client;
pub mod experiments;
pub mod registry;

pub use client::{Credentials, MlflowClient};
pub use experiments::MlflowExperiments;
pub use registry::MlflowRegistry;
