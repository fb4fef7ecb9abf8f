//! The embedded `local` platform: every stage on this machine, with no server to install —
//! a directory of content-addressed artifacts, SQLite for features, experiments and the
//! registry, an in-process DAG runner, an HTTP model server run as a managed background
//! process, and drift monitoring exported as Prometheus text.

pub mod artifacts;
pub mod db;
pub mod experiments;
pub mod features;
pub mod monitor;
pub mod orchestrator;
pub mod platform;
pub mod provider;
pub mod registry;
pub mod serving;

pub use platform::{LOCAL, capabilities, rules};
pub use provider::provider;
