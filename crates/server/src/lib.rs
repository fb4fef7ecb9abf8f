//! Galley's model server: an HTTP server for one endpoint's variants (weighted routing, hot
//! swap on reload, bearer auth, MLflow's scoring formats and SageMaker's `/invocations` and
//! `/ping`, Prometheus metrics, and an inference log for drift monitoring).
//!
//! It is shared machinery, not a platform: the local platform runs it as a managed background
//! process per endpoint, and Galley's container image runs it as the inference entrypoint on
//! managed platforms (`galley container serve`).

pub mod capture;
pub mod config;
pub mod grafana;
pub mod metrics;
pub mod prometheus;
mod recorder;
pub mod scoring;
mod server;
pub mod v2;

pub use config::{DEFAULT_MAX_BODY_BYTES, ServerConfig, ServerState, VariantConfig};
pub use server::{router, run_server, schedule};
