//! The `aws` platform: S3, SageMaker and CloudWatch through the official AWS SDK crates.
//!
//! - [`config`]: region, endpoint override, credential source, the SDK clients.
//! - [`error`]: every SDK error mapped to a Galley error kind, in one place.
//! - [`artifacts`]: the artifact store on S3 (streamed multipart, SHA-256 checked).
//! - [`state_backend`]: Galley's state in S3, locked with a conditional write.

pub mod artifacts;
pub mod config;
pub mod error;
pub mod state_backend;

pub use artifacts::S3Artifacts;
pub use config::{AwsClients, AwsConfig, CredentialSource};
pub use state_backend::S3StateBackend;
pub mod meta;
pub mod monitor;
pub mod registry;
pub mod serving;
pub mod waiter;

pub use monitor::AwsMonitor;
pub use registry::SageMakerRegistry;
pub use serving::SageMakerServing;
pub mod experiments;
pub mod features;
pub mod orchestrator;
pub mod provider;
pub mod training;

pub use experiments::SageMakerExperiments;
pub use features::SageMakerFeatures;
pub use orchestrator::SageMakerPipelines;
pub use provider::AwsProvider;
