//! The `aws` platform: S3, SageMaker and CloudWatch through the official AWS SDK crates.
//!
//! The `s3` feature builds [`config`], [`error`], [`artifacts`] and [`state_backend`] on the S3
//! SDK alone (any S3-compatible store, through an endpoint override). Without a feature only
//! what needs no SDK is built: [`platform`] (the rules
//! validation uses: capabilities, settings, naming, the `s3` state backend), [`cron`] (schedules
//! in EventBridge Scheduler's syntax) and [`container`]
//! (SageMaker's training contract, which Galley's image implements). The runtime adds:
//! - [`config`]: region, endpoint override, credential source, the SDK clients.
//! - [`error`]: every SDK error mapped to a Galley error kind, in one place.
//! - [`artifacts`]: the artifact store on S3 (streamed multipart, SHA-256 checked).
//! - [`state_backend`]: Galley's state in S3, locked with a conditional write.
//! - [`capture`]: SageMaker's data-capture files, which the monitor's drift reads.
//! - [`scaling`]: endpoint variants' autoscaling through Application Auto Scaling.
//! - [`triggers`]: a pipeline's schedule and drift trigger on AWS's side (EventBridge Scheduler,
//!   a CloudWatch alarm and an EventBridge rule), each starting the SageMaker pipeline.
//! - the stages on SageMaker and CloudWatch, [`training`] jobs, and [`provider`].

pub mod container;
pub mod cron;
pub mod platform;

pub use platform::{AWS, AwsSettings, capabilities, rules};

#[cfg(feature = "s3")]
pub use s3::*;
#[cfg(feature = "s3")]
mod s3 {
    pub use crate::artifacts::S3Artifacts;
    pub use crate::config::{AwsConfig, CredentialSource};
    pub use crate::state_backend::S3StateBackend;
}

#[cfg(feature = "runtime")]
mod runtime {
    pub use crate::config::AwsClients;
    pub use crate::experiments::SageMakerExperiments;
    pub use crate::features::SageMakerFeatures;
    pub use crate::monitor::AwsMonitor;
    pub use crate::orchestrator::SageMakerPipelines;
    pub use crate::provider::{AwsProvider, provider};
    pub use crate::registry::SageMakerRegistry;
    pub use crate::serving::SageMakerServing;

    /// The SDK crates behind [`AwsClients`], for code that builds their request types (the
    /// test stand-ins) without depending on each crate itself.
    pub mod sdk {
        pub use aws_sdk_cloudwatch as cloudwatch;
        pub use aws_sdk_sagemaker as sagemaker;
        pub use aws_smithy_types as smithy_types;
    }
}
#[cfg(feature = "runtime")]
pub use runtime::*;

/// Declares the modules that need the AWS SDK, each only with `$feature`.
macro_rules! sdk_modules {
    ($feature:literal: $($name:ident),* $(,)?) => { $(#[cfg(feature = $feature)] pub mod $name;)* };
}
sdk_modules!("s3": artifacts, bucket, config, error, state_backend);
sdk_modules!("runtime": capture, experiments, features, meta, monitor, orchestrator, provider, registry, scaling, serving, training, triggers, waiter);
