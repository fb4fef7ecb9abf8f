//! The `onprem` platform: the open-source stack a team runs on its own machines. Experiments
//! and the model registry are a real MLflow tracking server (`galley-mlflow`); features are a
//! Feast feature repository and its feature server ([`feast`]); artifacts, pipeline runs,
//! endpoints and monitors live under one shared directory, kept the way the local platform
//! keeps them (the endpoint is Galley's model server as a managed process, bound where the
//! blueprint says). Pipelines run on Airflow 3 when one is configured ([`airflow`]): a DAG
//! file per pipeline, each step a task running `galley container step`; without one, in
//! Galley's process with the shared directory's DAG runner.

pub mod airflow;
pub mod feast;
pub mod platform;
pub mod prometheus;
pub mod provider;

pub use platform::{ONPREM, capabilities, rules};
pub use provider::provider;
