//! Galley's state in S3, shared by a team: `KEY` holds the state, `KEY.backup` the one before
//! the last save, and `KEY.lock` the holder of the lock, created with a conditional write
//! (`If-None-Match: *`) so two writers can never both believe they hold it.
//!
//! [`StateBackend`] is synchronous (the engine calls it from anywhere, inside a Tokio runtime
//! or not), so calls run on a current-thread runtime owned by the backend, driven from a
//! scoped helper thread: never `block_on` on the caller's own runtime thread.

use std::future::Future;

use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use galley_core::{Error, ErrorKind, Result, Stage};
use galley_engine::{LockInfo, State, StateBackend};

use crate::config::AwsConfig;
use crate::error::{AwsFault, fault};

pub struct S3StateBackend {
    /// Always `Some` until drop.
    runtime: Option<tokio::runtime::Runtime>,
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Where the bucket is expected, for the message that says how to create it.
    region: String,
    endpoint_url: Option<String>,
}

impl std::fmt::Debug for S3StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3StateBackend(s3://{}/{})", self.bucket, self.key)
    }
}

/// `backend: { type: s3, … }` opened, for any platform that offers it (aws; onprem's
/// S3-compatible store); `None` for another backend type.
pub fn open(backend: &galley_blueprint::Backend, bp: &galley_blueprint::Blueprint) -> Option<Result<Box<dyn StateBackend>>> {
    (backend.kind == crate::platform::S3_BACKEND).then(|| {
        let settings: crate::platform::S3BackendSettings = backend.settings_as().map_err(Error::invalid)?;
        Ok(Box::new(S3StateBackend::for_blueprint(bp, &settings)?) as Box<dyn StateBackend>)
    })
}

impl S3StateBackend {
    /// Connects (resolving credentials once, so a missing source fails here with a clear
    /// message). Callable from inside or outside a Tokio runtime.
    pub fn connect(config: &AwsConfig, bucket: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let (bucket, key) = (bucket.into(), key.into());
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(Error::invalid(format!(
                "state key `{key}` is not an object key: use a path such as `galley/my-system/state.json`"
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal("could not start the S3 state backend's runtime").with_source(e))?;
        let (region, endpoint_url) = (config.region.clone(), config.endpoint_url.clone());
        let config = config.clone();
        let s3 = run_on(&runtime, async move { config.s3_client().await })?;
        Ok(S3StateBackend { runtime: Some(runtime), s3, bucket, key, region, endpoint_url })
    }

    /// From a blueprint's `backend: { type: s3, bucket, key, region, endpoint_url }` and its
    /// `platforms.aws` (endpoint override, profile), if any; the backend's `region` and
    /// `endpoint_url` win over the platform's.
    pub fn for_blueprint(bp: &galley_blueprint::Blueprint, backend: &crate::platform::S3BackendSettings) -> Result<Self> {
        let settings: Option<crate::AwsSettings> = bp.platform_settings(crate::AWS).map_err(Error::invalid)?;
        let mut config = match &settings {
            Some(s) => AwsConfig::from_settings(s),
            None => AwsConfig::new(backend.region.as_deref().unwrap_or("us-east-1")),
        };
        if let Some(r) = &backend.region {
            config.region = r.clone();
        }
        if let Some(url) = &backend.endpoint_url {
            // An S3-compatible store (MinIO, Ceph) on its own host: path-style addressing, as
            // those stores serve without wildcard DNS.
            config.endpoint_url = Some(url.clone());
            config.force_path_style = true;
        }
        Self::connect(&config, &backend.bucket, &backend.key)
    }

    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }
    pub fn backup_key(&self) -> String {
        format!("{}.backup", self.key)
    }

    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Maps an SDK error as [`crate::error::sdk`] does, except that a missing bucket is named
    /// with how to create it.
    fn fail<E>(&self, operation: &'static str, key: &str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error + use<'_, E>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let uri = self.uri(key);
        move |err| self.error(fault(&err), operation, &uri)
    }

    fn error(&self, fault: AwsFault, operation: &str, uri: &str) -> Error {
        if let (Some(_), Some(url)) = (fault.transport, &self.endpoint_url) {
            // No answer came, so nothing recorded who was asked: say it, an S3-compatible
            // store is not AWS.
            let e = fault.into_error(Stage::Artifacts, operation, uri);
            return Error::new(e.kind(), format!("the state store at {url} did not answer ({})", e.message()))
                .platform(crate::platform::AWS)
                .stage(Stage::Artifacts)
                .operation(operation)
                .resource(uri);
        }
        if fault.code.as_deref() != Some("NoSuchBucket") {
            return fault.into_error(Stage::Artifacts, operation, uri);
        }
        Error::not_found(missing_bucket(&self.bucket, &self.region, self.endpoint_url.as_deref()))
            .platform(crate::platform::AWS)
            .stage(Stage::Artifacts)
            .operation(operation)
            .resource(uri)
    }

    fn block<T: Send>(&self, fut: impl Future<Output = Result<T>> + Send) -> Result<T> {
        match &self.runtime {
            Some(rt) => run_on(rt, fut),
            None => Err(Error::internal("the S3 state backend is shutting down")),
        }
    }

    /// The object's bytes, or `None` when absent.
    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| {
                    Error::new(ErrorKind::Unavailable, format!("reading {} failed half-way", self.uri(key))).with_source(e)
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) => {
                // A missing object is no state (or no lock); a missing bucket is an error.
                let f = fault(&e);
                if f.kind() == ErrorKind::NotFound && f.code.as_deref() != Some("NoSuchBucket") {
                    Ok(None)
                } else {
                    Err(self.error(f, "GetObject", &self.uri(key)))
                }
            }
        }
    }
}

/// What to do when the state bucket does not exist: create it, versioned, as Terraform users
/// do for theirs (us-east-1 takes no location constraint).
fn missing_bucket(bucket: &str, region: &str, endpoint_url: Option<&str>) -> String {
    let endpoint = endpoint_url.map(|u| format!(" --endpoint-url {u}")).unwrap_or_default();
    let location = if region == "us-east-1" {
        String::new()
    } else {
        format!(" --create-bucket-configuration LocationConstraint={region}")
    };
    format!(
        "the state bucket `{bucket}` does not exist (region {region}): `galley init` creates it, versioned, encrypted and private; or create it yourself with versioning, e.g. \
         `aws s3api create-bucket --bucket {bucket} --region {region}{location}{endpoint}` then \
         `aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled{endpoint}`"
    )
}

/// Drives `fut` on `runtime` from a fresh scoped thread, so this works even when the calling
/// thread is itself inside a Tokio runtime (where `block_on` would panic).
fn run_on<T: Send>(runtime: &tokio::runtime::Runtime, fut: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(fut))
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the S3 state backend's helper thread panicked")))
    })
}

impl Drop for S3StateBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime: let it go in the
        // background instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl StateBackend for S3StateBackend {
    fn describe(&self) -> String {
        self.uri(&self.key)
    }

    fn load(&self) -> Result<Option<State>> {
        let Some(bytes) = self.block(self.read(&self.key))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(format!(
                "state {} is not a valid galley state ({e}); the previous state is in {}",
                self.describe(),
                self.uri(&self.backup_key())
            ))
        })
    }

    fn save(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        self.block(async {
            if let Some(previous) = self.read(&self.key).await? {
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.backup_key())
                    .body(S3Body::from(previous))
                    .send()
                    .await
                    .map_err(self.fail("PutObject", &self.backup_key()))?;
            }
            // A single PutObject replaces the object atomically.
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type("application/json")
                .body(S3Body::from(bytes))
                .send()
                .await
                .map_err(self.fail("PutObject", &self.key))?;
            Ok(())
        })
    }

    fn lock(&self, info: &LockInfo) -> Result<()> {
        let body = serde_json::to_vec_pretty(info)?;
        let lock_key = self.lock_key();
        let put = self.block(async {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&lock_key)
                .if_none_match("*")
                .content_type("application/json")
                .body(S3Body::from(body))
                .send()
                .await
                .map(|_| ())
                .map_err(self.fail("PutObject", &lock_key))
        });
        match put {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                let holder = match self.lock_holder() {
                    Ok(Some(h)) => h.describe(),
                    Ok(None) => "someone who released it just now; try again".to_owned(),
                    Err(e) => format!("an unknown holder ({e})"),
                };
                Err(Error::conflict(format!("state {} is locked by {holder}", self.describe())))
            }
            Err(e) => Err(e),
        }
    }

    fn unlock(&self, id: &str) -> Result<()> {
        match self.lock_holder()? {
            Some(h) if h.id == id => self.block(async {
                self.s3
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(self.lock_key())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(self.fail("DeleteObject", &self.lock_key()))
            }),
            Some(h) => Err(Error::conflict(format!(
                "cannot unlock state {}: lock id {id} does not match the current lock, held by {}",
                self.describe(),
                h.describe()
            ))),
            None => Ok(()),
        }
    }

    /// Creates the bucket (versioned, encrypted, private) when it is missing. An existing
    /// bucket is left as its owner set it; without versioning, the answer says so (an
    /// overwritten or deleted state could not be recovered).
    fn init(&self) -> Result<String> {
        self.block(async {
            if !crate::bucket::exists(&self.s3, &self.bucket, Stage::Artifacts).await? {
                crate::bucket::create(&self.s3, &self.region, &self.bucket, Stage::Artifacts).await?;
                crate::bucket::secure(&self.s3, &self.bucket, true, true, Stage::Artifacts).await?;
                return Ok(format!("created the state bucket `{}` in {} (versioned, encrypted, private)", self.bucket, self.region));
            }
            Ok(if crate::bucket::versioned(&self.s3, &self.bucket, Stage::Artifacts).await? {
                format!("the state bucket `{}` exists and is versioned", self.bucket)
            } else {
                format!(
                    "the state bucket `{b}` exists but is not versioned: an overwritten state could not be recovered; turn versioning on with `aws s3api put-bucket-versioning --bucket {b} --versioning-configuration Status=Enabled`",
                    b = self.bucket
                )
            })
        })
    }

    fn lock_holder(&self) -> Result<Option<LockInfo>> {
        let Some(bytes) = self.block(self.read(&self.lock_key()))? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(format!(
                "lock {} is unreadable ({e}); if no galley is running, delete that object",
                self.uri(&self.lock_key())
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bucket_says_how_to_create_it_in_its_region() {
        let m = missing_bucket("b", "eu-west-1", None);
        assert!(m.contains("`aws s3api create-bucket --bucket b --region eu-west-1 --create-bucket-configuration LocationConstraint=eu-west-1`"), "{m}");
        assert!(m.contains("`aws s3api put-bucket-versioning --bucket b --versioning-configuration Status=Enabled`"), "{m}");
        let m = missing_bucket("b", "us-east-1", Some("http://127.0.0.1:5000"));
        assert!(!m.contains("LocationConstraint"), "us-east-1 takes none: {m}");
        assert!(m.contains("--region us-east-1 --endpoint-url http://127.0.0.1:5000`"), "{m}");
    }
}
