//! The `onprem` platform: the open-source stack a team runs on its own machines. Experiments
//! and the model registry are a real MLflow tracking server (`galley-mlflow`); features are a
//! Feast feature repository and its feature server ([`feast`]); artifacts, pipeline runs,
//! endpoints and monitors live under one shared directory, kept the way the local platform
//! keeps them (the endpoint is Galley's model server as a managed process, bound where the
//! blueprint says). Airflow and Prometheus take over their stages as they land (issue 12);
//! until then the plan names those resources `onprem.*` with the directory they live in, so
//! nothing is hidden.

pub mod feast;
pub mod platform;
pub mod provider;

pub use platform::{ONPREM, capabilities, rules};
pub use provider::provider;
