//! What the `aws` platform is, as validation and the testkit see it, compiled without the AWS
//! SDK: its id, the features it declares (each proven on moto by a behaviour case in
//! `tests/stages.rs`), its `platforms.aws` settings, the `s3` state backend, and the naming
//! rules of S3 and SageMaker.

use std::sync::Arc;

use galley_blueprint::{BackendRule, Blueprint, Finding, PlatformRules};
use galley_core::capability::{Capabilities, Feature};
use galley_core::{PlatformId, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const AWS: PlatformId = PlatformId::from_static("aws");

/// The features the aws stages implement and moto (with the stand-ins in `tests/common`) can
/// show. Not declared, so validate refuses them on aws: new-data triggers, alarms, GPU
/// training, feature TTL, model stages and shadow traffic (the provisioning or runtime behind
/// them is not built yet).
/// The instance a pipeline step's container runs on when the blueprint names none.
pub const DEFAULT_STEP_INSTANCE: &str = "ml.m5.large";

/// The image and instance type of the pipeline's step containers: the training stage's.
pub fn step_container(bp: &Blueprint) -> (Option<String>, String) {
    let training = bp.stages.training.as_ref();
    (
        training.and_then(|t| t.image.clone()),
        training.and_then(|t| t.instance_type.clone()).unwrap_or_else(|| DEFAULT_STEP_INSTANCE.to_owned()),
    )
}

pub fn capabilities() -> Capabilities {
    use Feature::*;
    Capabilities::new(
        AWS,
        &[
            ArtifactVersioning, ArtifactEncryption, OnlineStore, PointInTimeFetch, RunSearch, Schedules, DriftTrigger, StepCaching, StepRetries,
            ApprovalStatus, TrafficSplit, Autoscaling, DriftPsi, DriftKs, PredictionDrift, ManagedCompute,
        ],
    )
}

/// `platforms.aws`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The region every resource lives in, e.g. `eu-west-1`.
    pub region: String,
    /// Overrides the service endpoint (emulators such as moto); `AWS_ENDPOINT_URL` also works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Credentials profile; otherwise the standard chain (environment, SSO, instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The IAM role SageMaker assumes for training and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// `backend: { type: s3, … }`: Galley's state as an S3 object, locked with a conditional write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3BackendSettings {
    /// The bucket holding the state (create it once, with versioning, before the first apply).
    pub bucket: String,
    /// The state object's key, e.g. `galley/my-system/state.json`.
    pub key: String,
    /// The bucket's region; `platforms.aws.region` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3-compatible store's URL (MinIO, Ceph: `http://minio.internal:9000`), addressed
    /// path-style; AWS's own S3 (or `platforms.aws.endpoint_url`) when absent. Credentials come
    /// from the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables or profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// The `type` of the S3 state backend.
pub const S3_BACKEND: &str = "s3";

pub struct AwsRules;

/// The aws platform's rules, for the registry (no SDK needed).
pub fn rules() -> Arc<dyn PlatformRules> {
    Arc::new(AwsRules)
}

impl PlatformRules for AwsRules {
    fn id(&self) -> PlatformId {
        AWS
    }

    fn summary(&self) -> &'static str {
        "S3, SageMaker (Feature Store, Experiments, Pipelines, Training Jobs, Model Registry, Endpoints), CloudWatch"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn cargo_feature(&self) -> &'static str {
        "aws"
    }

    fn remote_steps(&self, bp: &Blueprint) -> Option<String> {
        let (image, instance) = step_container(bp);
        Some(match image {
            Some(image) => format!("SageMaker Pipelines, each step a Processing job of image `{image}` on {instance} (billed while it runs, stopped after 24h)"),
            None => "SageMaker Pipelines, which needs Galley's image: set `stages.training.image` (or run with `--local-steps`)".to_owned(),
        })
    }

    /// A step container on SageMaker has its execution role's credentials, not the profile.
    fn machine_fields(&self) -> &'static [&'static str] {
        &["profile"]
    }

    fn settings_schema(&self) -> Option<serde_json::Value> {
        Some(schemars::schema_for!(AwsSettings).to_value())
    }

    fn state_backends(&self) -> Vec<BackendRule> {
        vec![BackendRule { kind: S3_BACKEND, schema: schemars::schema_for!(S3BackendSettings).to_value() }]
    }

    fn check(&self, bp: &Blueprint, stages: &[Stage]) -> Vec<Finding> {
        let mut out = Vec::new();
        let on_aws = |s: Stage| stages.contains(&s);
        if on_aws(Stage::Artifacts)
            && let Some(a) = &bp.stages.artifacts
            && let Err(why) = check_bucket(&a.bucket)
        {
            out.push(
                Finding::new(&["stages", "artifacts", "bucket"], format!("invalid S3 bucket name `{}`: {why}", a.bucket))
                    .hint("S3 bucket names are 3-63 characters of lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit"),
            );
        }
        // Features, runs, pipeline records and monitoring data live in the artifact bucket.
        let needs_bucket = stages.iter().any(|s| *s != Stage::Artifacts);
        if needs_bucket && !on_aws(Stage::Artifacts) {
            let at: &[&str] = if bp.stages.artifacts.is_some() { &["stages", "artifacts"] } else { &["stages"] };
            out.push(
                Finding::new(at, "stages on aws keep their data (features, runs, pipeline records, monitoring) in the artifact bucket, and this blueprint has no artifacts stage on aws")
                    .hint("declare `stages.artifacts` with a bucket, on platform aws"),
            );
        }
        if on_aws(Stage::Serving)
            && let Some(s) = &bp.stages.serving
            && !galley_blueprint::semantic::is_reference(&s.endpoint)
            && !valid_endpoint(&s.endpoint)
        {
            out.push(Finding::new(
                &["stages", "serving", "endpoint"],
                format!("invalid SageMaker endpoint name `{}`: use 1-63 letters, digits and `-`, starting and ending with a letter or digit", s.endpoint),
            ));
        }
        if stages.contains(&Stage::Pipeline)
            && bp.stages.pipeline.as_ref().is_some_and(|p| p.retrain_on.contains(&galley_blueprint::RetrainTrigger::Drift))
            && step_container(bp).0.is_none()
        {
            out.push(
                Finding::new(&["stages", "pipeline", "retrain_on"], "`retrain_on: drift` on aws checks drift hourly in a SageMaker Processing job of Galley's image, and the blueprint names no image")
                    .hint("set `stages.training.image` to Galley's image in your ECR"),
            );
        }
        if stages.contains(&Stage::Pipeline)
            && let Some(cron) = bp.stages.pipeline.as_ref().and_then(|p| p.schedule.as_deref())
            && !galley_blueprint::semantic::is_reference(cron)
            && let Err(why) = crate::cron::aws_cron(cron)
        {
            out.push(
                Finding::new(&["stages", "pipeline", "schedule"], format!("schedule `{cron}` cannot run on EventBridge Scheduler: {why}"))
                    .hint("e.g. `0 3 * * 1-5` for 03:00 UTC on weekdays"),
            );
        }
        out
    }
}

/// S3's bucket naming rules.
pub fn check_bucket(name: &str) -> Result<(), String> {
    if galley_blueprint::semantic::is_reference(name) {
        return Ok(());
    }
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return Err(format!("must be 3-63 characters long, is {}", b.len()));
    }
    if let Some(ch) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("`{ch}` is not allowed; use lower-case letters, digits, `-` and `.`"));
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("must start and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("must not contain `..`".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not look like an IP address".into());
    }
    if name.starts_with("xn--") || name.ends_with("-s3alias") {
        return Err("the prefix `xn--` and suffix `-s3alias` are reserved".into());
    }
    Ok(())
}

/// SageMaker's endpoint name pattern `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`.
pub fn valid_endpoint(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_bucket_rules() {
        assert!(check_bucket("acme-ml-artifacts").is_ok());
        assert!(check_bucket("a.b-c1").is_ok());
        for bad in ["ab", "-abc", "abc-", "a..b", "192.168.1.1", "ABC", "a_b", "xn--abc", &"a".repeat(64)] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sagemaker_endpoint_rules() {
        assert!(valid_endpoint("wine-quality-2"));
        assert!(valid_endpoint("W1"));
        for bad in ["", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_endpoint(bad), "{bad}");
        }
    }
}
