//! Galley's provider-neutral vocabulary.
//!
//! Every platform (local, onprem, aws, gcp, azure) implements the same seven stage traits
//! declared here, and declares what it can honour through [`Capabilities`]. Nothing in this
//! crate talks to a cloud: it is the contract the engine, the CLI and the testkit share.

pub mod actions;
pub mod capability;
pub mod error;
pub mod fs;
pub mod layers;
pub mod ml;
pub mod platform;
pub mod resource;
pub mod retry;
pub mod stages;
pub mod table;

pub use capability::Capabilities;
pub use error::{Error, ErrorKind, Result};
pub use platform::{PlatformId, Stage};
pub use retry::RetryPolicy;
pub use stages::{
    ArtifactStore, ExperimentTracker, FeatureStore, ModelRegistry, Monitor, Orchestrator, Serving,
    StageSet,
};
pub use table::{DType, Table, Value};
