//! How Galley reaches AWS: region, endpoint override, credential source and retry policy, and
//! the SDK clients built from them.
//!
//! Credentials come from the standard chain (environment, shared profiles, SSO, web identity,
//! ECS, instance metadata) unless a profile or explicit static credentials are given. They are
//! resolved once at connect time so a missing or broken source fails with one message naming
//! what was tried, instead of surfacing later as a stack of SDK internals.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use galley_blueprint::Blueprint;

use crate::error::RecordEndpoint;
use crate::platform::AwsSettings;
use galley_core::{Error, ErrorKind, Result, RetryPolicy};

/// Where credentials come from.
#[derive(Clone)]
pub enum CredentialSource {
    /// The SDK's default chain: env, profile (`AWS_PROFILE`), SSO, web identity, ECS, IMDS.
    DefaultChain,
    /// A named profile from the shared config/credentials files.
    Profile(String),
    /// Explicit keys (tests and emulators). Never written anywhere; `Debug` redacts them.
    Static { access_key_id: String, secret_access_key: String },
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::DefaultChain => f.write_str("DefaultChain"),
            CredentialSource::Profile(p) => write!(f, "Profile({p:?})"),
            CredentialSource::Static { access_key_id, .. } => {
                write!(f, "Static {{ access_key_id: {:?}, secret_access_key: ** redacted ** }}", redact_key(access_key_id))
            }
        }
    }
}

impl CredentialSource {
    /// What was tried, for the error a user sees when it yields nothing.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::DefaultChain => "the default credential chain (environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared profile in AWS_PROFILE or `default` from ~/.aws/config and ~/.aws/credentials, SSO, web identity, ECS container credentials, EC2 instance metadata)".into(),
            CredentialSource::Profile(p) => format!("the profile `{p}` in the shared AWS config files (~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"),
            CredentialSource::Static { access_key_id, .. } => format!("the static access key {}", redact_key(access_key_id)),
        }
    }
}

/// The first four characters of an access key id and a mask: enough to tell keys apart.
fn redact_key(id: &str) -> String {
    format!("{}…", id.chars().take(4).collect::<String>())
}

/// Everything needed to build clients.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub region: String,
    /// Overrides every service endpoint (emulators such as moto). `AWS_ENDPOINT_URL` is
    /// honoured by the SDK when this is `None`.
    pub endpoint_url: Option<String>,
    pub credentials: CredentialSource,
    /// The IAM role SageMaker assumes for training, pipelines and serving.
    pub role_arn: Option<String>,
    /// The SDK's own retries (standard mode, exponential backoff with jitter), sized from
    /// Galley's policy so throttling and 5xx are retried the same way everywhere.
    pub retry: RetryPolicy,
    /// Path-style S3 addressing (needed for emulators on `localhost` / an IP).
    pub force_path_style: bool,
}

impl AwsConfig {
    pub fn new(region: impl Into<String>) -> Self {
        AwsConfig {
            region: region.into(),
            endpoint_url: None,
            credentials: CredentialSource::DefaultChain,
            role_arn: None,
            retry: RetryPolicy::default(),
            force_path_style: false,
        }
    }

    /// From the blueprint's `platforms.aws` section.
    pub fn from_settings(settings: &AwsSettings) -> Self {
        let mut c = AwsConfig::new(settings.region.clone());
        // The blueprint's override first, then the SDK's standard `AWS_ENDPOINT_URL`; either way
        // an emulator on an IP or `localhost` needs path-style S3 addressing.
        c.endpoint_url = settings
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.trim().is_empty()));
        c.force_path_style = c.endpoint_url.is_some();
        c.role_arn = settings.role_arn.clone();
        if let Some(p) = &settings.profile {
            c.credentials = CredentialSource::Profile(p.clone());
        }
        c
    }

    pub fn from_blueprint(bp: &Blueprint) -> Result<Self> {
        let settings: AwsSettings = bp.platform_settings(crate::AWS).map_err(Error::invalid)?.ok_or_else(|| {
            Error::invalid("the blueprint uses platform `aws` but has no `platforms.aws` section; add `platforms: { aws: { region: eu-west-1 } }`")
        })?;
        Ok(Self::from_settings(&settings))
    }

    /// For tests and emulators: explicit region, endpoint and static credentials, so the SDK
    /// never probes the instance-metadata address.
    pub fn emulator(endpoint_url: &str, region: &str, access_key_id: &str, secret_access_key: &str) -> Self {
        let mut c = AwsConfig::new(region);
        c.endpoint_url = Some(endpoint_url.to_owned());
        c.force_path_style = true;
        c.credentials = CredentialSource::Static {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
        };
        c.role_arn = Some("arn:aws:iam::123456789012:role/galley-test".into());
        c
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.retry.max_attempts.max(1))
            .with_initial_backoff(self.retry.base_delay.max(Duration::from_millis(1)))
            .with_max_backoff(self.retry.max_delay)
    }

    /// Loads the shared SDK configuration and checks that credentials resolve.
    pub async fn load(&self) -> Result<aws_config::SdkConfig> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .retry_config(self.retry_config());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        loader = match &self.credentials {
            CredentialSource::DefaultChain => loader,
            // Only that profile: a named profile must not silently fall back to other sources.
            CredentialSource::Profile(p) => loader.profile_name(p.clone()).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder().profile_name(p.clone()).build(),
            ),
            CredentialSource::Static { access_key_id, secret_access_key } => loader.credentials_provider(
                Credentials::new(access_key_id.clone(), secret_access_key.clone(), None, None, "galley-static"),
            ),
        };
        let sdk = loader.load().await;
        let provider = sdk.credentials_provider().ok_or_else(|| self.no_credentials(None))?;
        provider.provide_credentials().await.map_err(|e| self.no_credentials(Some(e)))?;
        Ok(sdk)
    }

    /// The S3 client alone (the state backend, an S3-compatible artifact store).
    pub async fn s3_client(&self) -> Result<aws_sdk_s3::Client> {
        Ok(self.s3_from(&self.load().await?))
    }

    /// The S3 client over loaded configuration: path-style addressing when asked, and the
    /// answering endpoint recorded for error messages.
    fn s3_from(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(self.force_path_style).interceptor(RecordEndpoint).build())
    }

    fn no_credentials(&self, cause: Option<aws_credential_types::provider::error::CredentialsError>) -> Error {
        // The SDK's error chain can be long; its first line says which provider gave up.
        let why = cause.map(|e| format!(" ({})", first_line(&error_chain(&e)))).unwrap_or_default();
        Error::new(
            ErrorKind::Unauthenticated,
            format!(
                "no AWS credentials: tried {}{why}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `aws sso login`, or name a profile in `platforms.aws.profile`",
                self.credentials.describe()
            ),
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// One client per service, sharing one configuration.
#[cfg(feature = "runtime")]
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub config: AwsConfig,
    pub s3: aws_sdk_s3::Client,
    pub sagemaker: aws_sdk_sagemaker::Client,
    pub runtime: aws_sdk_sagemakerruntime::Client,
    pub featurestore: aws_sdk_sagemakerfeaturestoreruntime::Client,
    /// SageMaker Metrics: the only way metric points reach SageMaker Experiments from outside
    /// a training job.
    pub metrics: aws_sdk_sagemakermetrics::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Application Auto Scaling: endpoint variants' instance counts.
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    /// EventBridge Scheduler: a pipeline's schedule.
    pub scheduler: aws_sdk_scheduler::Client,
    /// EventBridge: the rule that turns a drift alarm into a pipeline run.
    pub events: aws_sdk_eventbridge::Client,
}

#[cfg(feature = "runtime")]
impl AwsClients {
    pub async fn connect(config: &AwsConfig) -> Result<Self> {
        let sdk = config.load().await?;
        // Every client records which endpoint answered, so an answer that is not AWS's (a
        // proxy's error page, a wrong endpoint URL) is reported with who gave it.
        Ok(AwsClients {
            config: config.clone(),
            s3: config.s3_from(&sdk),
            sagemaker: aws_sdk_sagemaker::Client::from_conf(aws_sdk_sagemaker::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
            runtime: aws_sdk_sagemakerruntime::Client::from_conf(aws_sdk_sagemakerruntime::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
            featurestore: aws_sdk_sagemakerfeaturestoreruntime::Client::from_conf(
                aws_sdk_sagemakerfeaturestoreruntime::config::Builder::from(&sdk).interceptor(RecordEndpoint).build(),
            ),
            metrics: aws_sdk_sagemakermetrics::Client::from_conf(aws_sdk_sagemakermetrics::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(aws_sdk_cloudwatch::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
            autoscaling: aws_sdk_applicationautoscaling::Client::from_conf(
                aws_sdk_applicationautoscaling::config::Builder::from(&sdk).interceptor(RecordEndpoint).build(),
            ),
            scheduler: aws_sdk_scheduler::Client::from_conf(aws_sdk_scheduler::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
            events: aws_sdk_eventbridge::Client::from_conf(aws_sdk_eventbridge::config::Builder::from(&sdk).interceptor(RecordEndpoint).build()),
        })
    }

    /// The role SageMaker assumes; required for models, pipelines and feature groups.
    pub fn role_arn(&self, what: &str) -> Result<String> {
        self.config.role_arn.clone().ok_or_else(|| {
            Error::invalid(format!(
                "{what} needs an IAM role for SageMaker to assume: set `platforms.aws.role_arn` in the blueprint"
            ))
        })
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = AwsConfig::emulator("http://127.0.0.1:1", "eu-west-1", "AKIAEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRET");
        let shown = format!("{c:?} {}", c.credentials.describe());
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("AKIAEXAMPLEKEY"), "{shown}");
        assert!(shown.contains("AKIA…"), "{shown}");
    }

    #[test]
    fn sdk_retries_follow_galleys_policy() {
        let c = AwsConfig::new("eu-west-1").with_retry(RetryPolicy { max_attempts: 7, ..Default::default() });
        let r = c.retry_config();
        assert_eq!(r.max_attempts(), 7);
        assert_eq!(r.max_backoff(), RetryPolicy::default().max_delay);
    }
}
